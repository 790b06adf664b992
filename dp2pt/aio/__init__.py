"""asyncio edges of the protocol: sockets and timers around the sans-IO logic in dp2pt.proto."""
