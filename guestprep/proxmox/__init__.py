"""The Proxmox VE adapter: the API client (proxmoxer-style requests session, tasks, tokens)
and the API schema every request is validated against. Stages (finalize, cutover) use it;
it imports no stage."""
