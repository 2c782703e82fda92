"""Credit notes: final documents that reduce what an open invoice asks, or give back part of a
paid one (refund through the provider, a credit grant, or settled outside)."""
