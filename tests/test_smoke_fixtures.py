from bertctl.recipe import load_recipe


def test_fixtures_small_recipe_is_valid(small_recipe):
    recipe = load_recipe(small_recipe)
    assert recipe.data.labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert recipe.data_path("train").is_file()
