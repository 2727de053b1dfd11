"""Channel adapters: one module per transport, translating it into InboundContact and back."""
