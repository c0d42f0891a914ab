"""Local stand-ins for cloud services (S3), for development and tests; never used in production."""

from mdctr.devservices.s3 import S3Server, S3ServerError, start_s3

__all__ = ["S3Server", "S3ServerError", "start_s3"]
