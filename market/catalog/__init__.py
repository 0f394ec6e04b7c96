"""The catalogue: datasets, their versions and records, supply chains, offers, listing review,
search. It never imports billing; billing reads it."""
