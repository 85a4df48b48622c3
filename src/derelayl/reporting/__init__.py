"""Figures and summaries written from results (matplotlib, Agg backend)."""
