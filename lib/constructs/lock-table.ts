import { RemovalPolicy } from 'aws-cdk-lib';
import {
  AttributeType,
  BillingMode,
  ProjectionType,
  StreamViewType,
  Table,
  TableEncryption,
} from 'aws-cdk-lib/aws-dynamodb';
import { Construct } from 'constructs';
import { DUE_INDEX, GC_ATTRIBUTE, KEY, LIST_INDEX, OWNER_INDEX } from '../../lambdas/store/table';

export interface LockTableProps {
  /**
   * What happens to the table (and every lock and fencing counter in it) when the stack is deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * The one table that holds all state. Secure defaults in one place:
 * on-demand capacity, point-in-time recovery, KMS encryption, deletion
 * protection, retained on stack deletion. TTL on `gc_at` only collects
 * garbage; leases are judged by the functions on their own clock.
 */
export class LockTable extends Construct {
  readonly table: Table;

  constructor(scope: Construct, id: string, props: LockTableProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.table = new Table(this, 'Table', {
      partitionKey: { name: KEY.pk, type: AttributeType.STRING },
      sortKey: { name: KEY.sk, type: AttributeType.STRING },
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: TableEncryption.AWS_MANAGED,
      timeToLiveAttribute: GC_ATTRIBUTE,
      stream: StreamViewType.NEW_AND_OLD_IMAGES,
      deletionProtection: removalPolicy === RemovalPolicy.RETAIN,
      removalPolicy,
    });
    this.table.addGlobalSecondaryIndex({
      indexName: LIST_INDEX.name,
      partitionKey: { name: LIST_INDEX.pk, type: AttributeType.STRING },
      sortKey: { name: LIST_INDEX.sk, type: AttributeType.STRING },
      // Keys only: acquire and release never change them, so they never write to the index.
      projectionType: ProjectionType.KEYS_ONLY,
    });
    this.table.addGlobalSecondaryIndex({
      indexName: OWNER_INDEX.name,
      partitionKey: { name: OWNER_INDEX.pk, type: AttributeType.STRING },
      sortKey: { name: OWNER_INDEX.sk, type: AttributeType.STRING },
      // Sparse (only waiters of a WebSocket connection carry the keys), keys only.
      projectionType: ProjectionType.KEYS_ONLY,
    });
    this.table.addGlobalSecondaryIndex({
      indexName: DUE_INDEX.name,
      partitionKey: { name: DUE_INDEX.pk, type: AttributeType.STRING },
      sortKey: { name: DUE_INDEX.sk, type: AttributeType.NUMBER },
      // Sparse (sessions not yet swept, waiters, connections carry the keys), keys only: what is due.
      projectionType: ProjectionType.KEYS_ONLY,
    });
  }
}
