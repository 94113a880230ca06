"""Traffic shifting: one small LoadBalancer interface, a driver per kind of balancer, and the
shift operation that sets a green share, reads it back and confirms the observed split."""
