"""mailer: send a campaign's invitations, read the registrations that come back, answer them."""

__version__ = "0.1.0"
