package main

import (
	"sort"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
)

// localOutputs adds what local tools need from a deployed stack: the token
// secret's ARN (make sam-env writes it into SAM's --env-vars file) and, for
// SAM only, AWS_ENDPOINT_URL declared on every function.
func (s *Stack) localOutputs(props StackProps) {
	if s.TokenSecret != nil {
		awscdk.NewCfnOutput(s.Stack, jsii.String("TokenSecretArn"), &awscdk.CfnOutputProps{
			Value: s.TokenSecret.SecretArn(), Description: jsii.String("the access token key's secret (its ARN, not the key)"),
		})
	}
	if props.AwsEndpointURL == "" {
		return
	}
	names := make([]string, 0, len(s.Functions))
	for name := range s.Functions {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s.Functions[name].AddEnvironment(jsii.String("AWS_ENDPOINT_URL"), jsii.String(props.AwsEndpointURL), nil)
	}
}
