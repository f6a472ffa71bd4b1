"""The spec: what to train, as validated data.

`schema` defines and loads it; `compose` merges spec files (`extends:`) and environment
defaults; `messages` turns validation errors into one-line issues; `resolve` checks names
against the registry and makes live loss, metric and data objects; `module` writes a spec as a
Python class; `summary` and `reference` describe a spec and the schema for people.
"""
