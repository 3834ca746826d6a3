"""The call and its handlers: the client-stream seam the drivers implement, the one
callback-driven call per request, pexec (with its relay between workers) and health
on top of it, the policies it applies (SSE keep-alive, body rate, deadlines, request
ids) and the counters it keeps."""
