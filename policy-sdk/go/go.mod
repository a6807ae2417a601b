module tmc.dev/policy-sdk/go

go 1.24
