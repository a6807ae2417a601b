module tmc.dev/policies/location-affinity-go

go 1.24

require tmc.dev/policy-sdk/go v0.0.0

replace tmc.dev/policy-sdk/go => ../../policy-sdk/go
