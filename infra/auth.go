package main

import (
	"errors"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2authorizers"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2integrations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/jsii-runtime-go"

	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// Authorization modes of the stack.
const (
	authBulkfhir = "bulkfhir" // bulkfhir's token endpoint and tokens (default)
	authJWT      = "jwt"      // an outside issuer, API Gateway's JWT authorizer
	authNone     = "none"     // no authentication (bulkfhir:allowAnonymous=true)
)

// errOpenAPI is the refusal to synthesize an unauthenticated API.
var errOpenAPI = errors.New("refusing to synthesize an API without authentication: set bulkfhir:allowAnonymous=true (a development setting), or leave bulkfhir:auth unset for bulkfhir's own SMART Backend Services tokens")

// authMode is the stack's authorization, checked.
func (p StackProps) authMode() (string, error) {
	mode := p.Auth
	if mode == "" {
		switch {
		case p.JwtIssuer != "":
			mode = authJWT
		case p.AllowAnonymous:
			mode = authNone
		default:
			mode = authBulkfhir
		}
	}
	switch mode {
	case authBulkfhir:
	case authJWT:
		if p.JwtIssuer == "" {
			return "", errors.New("bulkfhir:auth=jwt needs bulkfhir:jwtIssuer (and bulkfhir:jwtAudience)")
		}
	case authNone:
		if !p.AllowAnonymous {
			return "", errOpenAPI
		}
	default:
		return "", errors.New("bulkfhir:auth must be bulkfhir, jwt or none")
	}
	if mode != authNone && p.AllowAnonymous {
		return "", errors.New("bulkfhir:allowAnonymous=true and an authorization server exclude each other")
	}
	return mode, nil
}

// authorization sets up who may call the API and returns the authorizer
// of the export routes (nil only with allowAnonymous). In the default
// mode it adds the auth table (clients, used jti values, TTL), the access
// token secret, the token function (served on the unauthenticated token
// and discovery routes) and a Lambda authorizer; the API functions verify
// every token themselves too (expiry, scopes, owner).
func (s *Stack) authorization(props StackProps) awsapigatewayv2.IHttpRouteAuthorizer {
	mode, err := props.authMode()
	if err != nil {
		panic(err.Error())
	}
	setAuth := func(v string) {
		for _, fn := range []string{"kickoff", "status"} {
			s.Functions[fn].AddEnvironment(jsii.String(settings.EnvAuth), jsii.String(v), nil)
		}
	}
	switch mode {
	case authNone:
		setAuth(settings.AuthNone)
		return nil
	case authJWT:
		setAuth(settings.AuthGateway)
		if props.JwtTokenURL != "" {
			for _, fn := range []string{"kickoff", "status"} {
				s.Functions[fn].AddEnvironment(jsii.String(settings.EnvTokenURL), jsii.String(props.JwtTokenURL), nil)
			}
		}
		return awsapigatewayv2authorizers.NewHttpJwtAuthorizer(jsii.String("Jwt"), jsii.String(props.JwtIssuer),
			&awsapigatewayv2authorizers.HttpJwtAuthorizerProps{JwtAudience: jsii.Strings(props.JwtAudience)})
	}
	setAuth(settings.AuthBulkfhir)

	removal := awscdk.RemovalPolicy_DESTROY
	if props.RetainData {
		removal = awscdk.RemovalPolicy_RETAIN
	}
	tableProps := &awsdynamodb.TableProps{
		PartitionKey:        &awsdynamodb.Attribute{Name: jsii.String(attrPK), Type: awsdynamodb.AttributeType_STRING},
		BillingMode:         awsdynamodb.BillingMode_PAY_PER_REQUEST,
		TimeToLiveAttribute: jsii.String(attrTTL),
		PointInTimeRecovery: jsii.Bool(true),
		Encryption:          awsdynamodb.TableEncryption_AWS_MANAGED,
		RemovalPolicy:       removal,
	}
	if key := s.Bucket.EncryptionKey(); key != nil {
		tableProps.Encryption = awsdynamodb.TableEncryption_CUSTOMER_MANAGED
		tableProps.EncryptionKey = key
	}
	s.AuthTable = awsdynamodb.NewTable(s.Stack, jsii.String("Auth"), tableProps)
	secretProps := &awssecretsmanager.SecretProps{
		Description: jsii.String("bulkfhir: signs and verifies the access tokens bulkfhir issues (HS384)"),
		GenerateSecretString: &awssecretsmanager.SecretStringGenerator{
			PasswordLength: jsii.Number(64), ExcludePunctuation: jsii.Bool(true),
		},
	}
	if key := s.Bucket.EncryptionKey(); key != nil {
		secretProps.EncryptionKey = key
	}
	s.TokenSecret = awssecretsmanager.NewSecret(s.Stack, jsii.String("TokenKey"), secretProps)

	env := map[string]*string{
		settings.EnvTokenSecretARN: s.TokenSecret.SecretArn(),
		settings.EnvAuthTable:      s.AuthTable.TableName(),
	}
	if props.PublicBaseURL != "" {
		env[settings.EnvPublicBaseURL] = jsii.String(props.PublicBaseURL)
	}
	s.newFunction(function{"token", 256, awscdk.Duration_Seconds(jsii.Number(10))}, props, env)
	s.newFunction(function{"authorizer", 256, awscdk.Duration_Seconds(jsii.Number(5))}, props,
		map[string]*string{settings.EnvTokenSecretARN: s.TokenSecret.SecretArn()})
	for _, fn := range []string{"kickoff", "status", "token", "authorizer"} {
		s.allow(fn, []string{"secretsmanager:GetSecretValue"}, s.TokenSecret.SecretArn())
		if fn == "kickoff" || fn == "status" {
			s.Functions[fn].AddEnvironment(jsii.String(settings.EnvTokenSecretARN), s.TokenSecret.SecretArn(), nil)
		}
		if key := s.Bucket.EncryptionKey(); key != nil {
			s.allow(fn, []string{"kms:Decrypt"}, key.KeyArn())
		}
	}
	// token: look up clients, record jti values (conditional put).
	s.allow("token", []string{"dynamodb:GetItem", "dynamodb:PutItem"}, s.AuthTable.TableArn())
	if key := s.Bucket.EncryptionKey(); key != nil {
		s.allow("token", []string{"kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"}, key.KeyArn())
	}

	token := awsapigatewayv2integrations.NewHttpLambdaIntegration(jsii.String("TokenIntegration"), s.Functions["token"], nil)
	s.publicRoutes = func(api awsapigatewayv2.HttpApi, kickoff awsapigatewayv2.HttpRouteIntegration) {
		// The token endpoint and discovery must be reachable without a
		// token: they are how a client gets one. Without a token metadata
		// answers only what discovery needs (operations, token URL).
		api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
			Path: jsii.String("/fhir/metadata"), Methods: &[]awsapigatewayv2.HttpMethod{awsapigatewayv2.HttpMethod_GET},
			Integration: kickoff, Authorizer: awsapigatewayv2.NewHttpNoneAuthorizer(),
		})
		api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
			Path: jsii.String("/fhir/auth/token"), Methods: &[]awsapigatewayv2.HttpMethod{awsapigatewayv2.HttpMethod_POST},
			Integration: token, Authorizer: awsapigatewayv2.NewHttpNoneAuthorizer(),
		})
		api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
			Path: jsii.String("/fhir/.well-known/smart-configuration"), Methods: &[]awsapigatewayv2.HttpMethod{awsapigatewayv2.HttpMethod_GET},
			Integration: token, Authorizer: awsapigatewayv2.NewHttpNoneAuthorizer(),
		})
	}
	return awsapigatewayv2authorizers.NewHttpLambdaAuthorizer(jsii.String("BulkfhirTokens"), s.Functions["authorizer"],
		&awsapigatewayv2authorizers.HttpLambdaAuthorizerProps{
			ResponseTypes:   &[]awsapigatewayv2authorizers.HttpLambdaResponseType{awsapigatewayv2authorizers.HttpLambdaResponseType_SIMPLE},
			IdentitySource:  jsii.Strings("$request.header.Authorization"),
			ResultsCacheTtl: awscdk.Duration_Minutes(jsii.Number(5)),
		})
}
