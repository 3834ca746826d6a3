"""The LLM gateway (NVCF's `llm.<domain>`, spec part 2 section 8): OpenAI-compatible
endpoints routed by the body's `model` to a function, on the same engine as every other
invocation (proxy/calls/call.py's Call). Above calls/ and routing/: it uses both, and
only the server wires it in (dispatch.py sees it as a RequestHandler)."""
