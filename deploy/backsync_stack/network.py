"""The network part of the backsync stack: VPC and the two security groups.

Public subnets (load balancer), private ones with egress (the ECS tasks), isolated ones
(the database); Aurora accepts MySQL from the app's security group only.

Like every part (stack.py says why), it builds in the stack's own scope.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2

APP_SUBNETS = ec2.SubnetType.PRIVATE_WITH_EGRESS
DB_SUBNETS = ec2.SubnetType.PRIVATE_ISOLATED


class Network:
    def __init__(self, stack: Stack) -> None:
        self.vpc = ec2.Vpc(
            stack,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC),
                ec2.SubnetConfiguration(name="app", subnet_type=APP_SUBNETS),
                ec2.SubnetConfiguration(name="db", subnet_type=DB_SUBNETS),
            ],
        )
        self.app_security_group = ec2.SecurityGroup(
            stack, "AppSecurityGroup", vpc=self.vpc, description="backsync web, worker, release"
        )
        self.db_security_group = ec2.SecurityGroup(
            stack,
            "DatabaseSecurityGroup",
            vpc=self.vpc,
            description="backsync Aurora: MySQL from the app tasks only",
            allow_all_outbound=False,
        )
        self.db_security_group.add_ingress_rule(
            self.app_security_group, ec2.Port.tcp(3306), "MySQL from backsync tasks"
        )

    @property
    def app_subnets(self) -> ec2.SubnetSelection:
        """Where the tasks run (and the one-off tasks are started: output AppSubnetIds)."""
        return ec2.SubnetSelection(subnet_type=APP_SUBNETS)
