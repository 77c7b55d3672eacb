"""Pure pipeline logic shared by the actors, the tests and the tools.

Nothing here knows about HTTP or the broker: `rows` turns a payload into CSV
bytes and back, `csv_sink` appends those bytes durably and exactly once.
"""
