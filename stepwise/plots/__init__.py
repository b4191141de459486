"""Figures and the HTML report. Everything here reads run directories; nothing runs a model."""
