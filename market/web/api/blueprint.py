from market.web.api.endpoint import ApiBlueprint

api = ApiBlueprint("api", __name__, url_prefix="/api/v1")
