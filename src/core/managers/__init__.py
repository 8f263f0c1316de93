"""Managers that live in main: the ServiceSupervisor and the CommunicationManager (hub)."""
