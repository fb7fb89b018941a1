"""The CheckoutService servicer. Every RPC answers UNIMPLEMENTED until the checkout issue lands."""

from __future__ import annotations

from loyalty.checkout.v1 import checkout_pb2, checkout_pb2_grpc

SERVICE_NAME = checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name


class CheckoutServicer(checkout_pb2_grpc.CheckoutServiceServicer):
    pass
