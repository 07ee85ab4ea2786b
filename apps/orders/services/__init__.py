"""Write use cases of orders: placing, changing, cancelling, routing, and applying broker events."""
