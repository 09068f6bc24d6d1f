"""Development only: the stream relay (the local stand-in for the Lambda runtime: it polls
DynamoDB Streams and calls the same handler) and the provisioning of local AWS resources
(moto). Production code never imports this package (an import contract checks it); only
management commands do."""
