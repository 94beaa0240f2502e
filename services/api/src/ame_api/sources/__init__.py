"""Git project sources: repositories whose branch head becomes a project version at each sync."""
