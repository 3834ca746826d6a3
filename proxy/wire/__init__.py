"""What both sides of the gateway share on the wire: header-field rules and the
forwarding policy, write-side flow control of a transport, and libnghttp2's
configuration with its protections."""
