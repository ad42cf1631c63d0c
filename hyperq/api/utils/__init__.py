"""Small helpers of the API."""
