"""The agent's container and what surrounds it: the image, the container, Node, the key and egress proxies.
Imports agents, config and core."""
