"""The engagement team's console: a signed-in web page for champions, groups, messages and reflections."""
