"""Explanation methods: one module each, one ``explain`` interface (see ``base``)."""
