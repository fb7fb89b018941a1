"""Checkout: catalogue, quotes, orders and the checkout saga."""
