"""Four eyes on the gateway itself: policy and directory changes need another admin."""
