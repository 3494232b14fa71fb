"""The service layer between actions and engines: one path from a snapshot spec to an applied
tree (locate, open, trust, stage, screen, apply), the node lock and the restic handle every
action needs. It imports engines, profiles, model and config, never an action."""
