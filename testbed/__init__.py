"""Real servers and service processes for the tests and the benchmarks.

Each helper starts what it needs on free ports of the loopback interface (redis-server,
moto's S3 server, a database of its own on the local PostgreSQL or MariaDB, worker and
beat processes, fault-injecting proxies) and stops exactly what it started.
"""
