"""Responders: decide which replies a contact deserves, render them, queue them durably."""
