"""Sans-IO protocol logic: codecs, schedules and state machines; no sockets, no clocks."""
