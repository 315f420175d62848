"""The mesh's business services. They reach the gateway only through its client interface."""
