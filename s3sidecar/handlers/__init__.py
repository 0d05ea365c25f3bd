"""One module per S3 resource; each handler takes an :class:`~s3sidecar.context.S3Request`
and returns a Starlette response, reaching the engine only through ``req.engine``."""
