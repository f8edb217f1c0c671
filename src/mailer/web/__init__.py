"""The clerk's web view: app (server, auth), pages, actions, views, chart, templates/."""
