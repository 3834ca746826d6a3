"""Instance-side connections: HTTP/1.1 keep-alive pools and HTTP/2 (h2c) connections
for gRPC, pushing responses to the call through sink callbacks."""
