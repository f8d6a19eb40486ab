"""Reading what a user hands over (files, archives, downloads) without trusting it."""
