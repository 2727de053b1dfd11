"""The intake pipeline: named steps that read, understand and route every inbound contact."""
