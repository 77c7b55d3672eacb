"""The HTTP source: FastAPI app factory, routers and the payload schema."""
