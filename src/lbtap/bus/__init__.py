"""Message bus between the server and the agents (in-process or RabbitMQ)."""
