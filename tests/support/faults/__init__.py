"""Fault tooling: a fault-injecting S3 proxy and restartable S3 server (`s3_proxy`) and SIGKILL of one
process of a running job at a seeded point (`killer`)."""
