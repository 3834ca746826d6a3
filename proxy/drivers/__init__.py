"""Client-side protocol drivers: bytes from clients to exchanges and back
(HTTP/1.1 on httptools, HTTP/2 on libnghttp2, and the sniffer that picks one)."""
