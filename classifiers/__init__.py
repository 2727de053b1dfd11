"""Classifiers: language, intent, document type and entities of contacts and documents."""
