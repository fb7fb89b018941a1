"""HTTP/JSON gateway for the checkout frontend and operators (issue #7).

It will authenticate, authorise, validate, call the services over gRPC through `shared.peers`
and map `DomainError` reasons to HTTP problems. It holds no business rules and no tables.
"""
