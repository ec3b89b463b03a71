"""The benchmark behind `invoke bench`: not part of the installed package."""
