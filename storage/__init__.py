"""Durable state in RocksDB (rocksdict, raw mode): keys, records, group-committed batches."""
