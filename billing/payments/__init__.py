"""Taking money: the card gateway, card payments and bank transfers, refunds, processor webhooks."""
