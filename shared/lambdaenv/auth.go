package lambdaenv

import (
	"fmt"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// loadAuth reads the API functions' authorization settings.
func loadAuth(getenv func(string) string, c *Config, problems *[]string) {
	c.Auth = strings.TrimSpace(getenv(settings.EnvAuth))
	if c.Auth == "" {
		c.Auth = settings.AuthBulkfhir
	}
	c.TokenSecretARN = strings.TrimSpace(getenv(settings.EnvTokenSecretARN))
	c.TokenURL = strings.TrimSpace(getenv(settings.EnvTokenURL))
	switch c.Auth {
	case settings.AuthBulkfhir:
		if c.TokenSecretARN == "" {
			*problems = append(*problems, settings.EnvTokenSecretARN+" is not set (the access token key; or set "+settings.EnvAuth+"=gateway or none)")
		}
	case settings.AuthGateway, settings.AuthNone:
	default:
		*problems = append(*problems, fmt.Sprintf("%s=%q: want bulkfhir, gateway or none", settings.EnvAuth, c.Auth))
	}
}
