"""Plans, price versions, deployments and lifecycle events (usage issue)."""
