from flask import Blueprint

storefront = Blueprint("storefront", __name__)
