"""In-memory search structures. No I/O here: storage/ persists, server/ wires the two.

Locking: the structures here are not thread-safe on their own; server/ guards each collection
with one readers-writer lock (readers: searches; writer: applying a committed batch).
"""
