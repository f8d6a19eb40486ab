"""The ground floor: errors, enumerations, L*a*b*, the config schema, the mesh."""
